from harness.env import triton_device

# Without a GPU the Triton stages run on CPU tensors through the interpreter; it must be set
# before triton is imported.
triton_device()
