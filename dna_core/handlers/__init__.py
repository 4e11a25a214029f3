"""Pure request handlers: each takes a client and a neutral request."""
