"""boundgraph: certified robustness for PyTorch models.

The public API fits on a card::

    import boundgraph as bg
    bm = bg.BoundedModule(model, example_input)            # trace once
    lb, ub = bm.compute_bounds(x, bg.LinfBall(eps, lower=0.0, upper=1.0),
                               method="ibp" | "crown-ibp" | "crown" | "alpha-crown", C=None)
    bg.LpBall(eps, p=2, lower=0.0, upper=1.0)              # l1 / l2 / l-inf balls
    bm = bg.BoundedModule(model, (x1, x2))                 # several inputs ...
    bm.compute_bounds((x1, x2), {0: bg.LinfBall(eps)})      # ... only x1 perturbed
    C = bg.margin_spec(y, num_classes)                      # (B, K-1, K), rows e_y - e_j
    logits = bm(x)                                          # plain forward, same as model(x)

Methods implemented: interval bound propagation (Gowal et al. 2018), CROWN (Zhang et al.
2018), CROWN-IBP (Zhang et al. 2020) and alpha-CROWN (Xu et al. 2021).
"""
from . import ops
from .bounded import METHODS, BoundedModule
from .errors import BoundGraphError, DomainError, InputError, TraceError, UnsupportedOpError
from .frontends.onnx_export import export_onnx
from .frontends.onnx_import import load_onnx
from .frontends.torch_trace import register_op
from .perturbation import Box, LinfBall, LpBall
from .spec import margin_spec

__version__ = "0.1.0"

__all__ = ["BoundedModule", "LpBall", "LinfBall", "Box", "margin_spec", "register_op", "METHODS", "ops",
           "BoundGraphError", "DomainError", "InputError", "TraceError", "UnsupportedOpError",
           "export_onnx", "load_onnx"]

from . import training  # noqa: E402  (bg.training.fit / evaluate / load_checkpoint)
