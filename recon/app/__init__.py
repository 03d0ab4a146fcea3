"""The commands: settings in, runs out; the command line, the demo and the samples."""
