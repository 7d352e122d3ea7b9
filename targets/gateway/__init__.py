"""The Linux gateway target: the binary's entry point, its shim and its systemd unit."""
