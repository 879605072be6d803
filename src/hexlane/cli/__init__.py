"""The hexlane command line."""
