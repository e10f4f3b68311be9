"""Looking after stored state: drift between it and the settings, reset, retention, dropping a source."""
