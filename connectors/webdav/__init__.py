"""WebDAV file stores (RFC 4918) as the sink of drives: each user's or space's files under a
root collection, written as streams and read back by their hash."""
