import os

import torch

# Without a GPU the Triton stages run on CPU tensors through the interpreter; it must be set
# before triton is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
