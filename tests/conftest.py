import os

# The Triton stages run on CPU tensors through the interpreter; it must be set before triton imports.
os.environ.setdefault("TRITON_INTERPRET", "1")
