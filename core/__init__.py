"""pysc: a container sandbox with a user-space kernel."""
