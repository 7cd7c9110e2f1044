"""Microsoft 365 through Microsoft Graph: app-only sign-in with msal (``auth``) and a shared
HTTP session (``session``). Nothing is imported here: a batch without a Graph section does
not pay for msal and requests (a fifth of a second at every start)."""
