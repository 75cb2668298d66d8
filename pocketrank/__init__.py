"""The `pocketrank` command group: one command over the server, the device runtime and the demo."""
