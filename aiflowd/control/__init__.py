"""The control socket: its protocol, the daemon's server and aiflowctl's client."""
