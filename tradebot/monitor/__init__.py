"""Watching the bot: its activity as it happens, and a periodic summary line in the log."""
