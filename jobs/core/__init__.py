"""Pure transforms shared by steps and tools: frames in, frames out, no I/O."""
