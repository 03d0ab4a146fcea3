"""What the process asks of the operating system: safe output paths and memory given back."""
