"""Testing support shipped with the package: the gateway's in-memory twin and a webhook sink."""
