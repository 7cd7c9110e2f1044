"""Exchange Server on premises through Exchange Web Services (EWS): a source of mail."""
