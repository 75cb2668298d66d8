"""Bundles: everything a device syncs: publishing the signed bundle, the model part of its manifest,
the signed item entries, and canary variants."""
