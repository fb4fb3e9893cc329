"""``boundgraph export``: write a model as a standard ONNX file with a dynamic batch dimension.

    boundgraph export --model cnn_3layer --dataset mnist --out cnn.onnx
    boundgraph export --checkpoint runs/mnist/best.pt --out net.onnx
    boundgraph export net.onnx --out clean.onnx          # re-export an imported ONNX graph

The file is checked with onnxruntime against the model before the command succeeds.
"""
from __future__ import annotations

import json

from ..errors import InputError


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a model to ONNX",
                              description="Export a zoo model (optionally with checkpoint "
                                          "weights) or an ONNX file's bound graph to ONNX.")
    p.add_argument("source", nargs="?", metavar="MODEL.onnx",
                   help="an ONNX file to re-export from its bound graph")
    p.add_argument("--model", metavar="NAME", help="zoo model name (see models.MODELS)")
    p.add_argument("--checkpoint", metavar="PT", help="weights to load")
    p.add_argument("--dataset", help="image shape from this data set (default mnist)")
    p.add_argument("--model-kwargs", metavar="JSON", help="extra model arguments as JSON")
    p.add_argument("--out", required=True, metavar="FILE.onnx")
    p.add_argument("--opset", type=int, default=13)
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..frontends.onnx_export import export_onnx

    if args.source:
        if args.model or args.checkpoint:
            raise InputError("give either MODEL.onnx or --model/--checkpoint")
        from ..frontends.onnx_import import load_onnx

        bm = load_onnx(args.source)
        x = torch.rand((2, *bm.graph.input_shape), dtype=bm.model.onnx_info.dtype)
        export_onnx(bm, x, args.out, opset=args.opset)
        print(f"wrote {args.out} (input (batch, {', '.join(map(str, bm.graph.input_shape))}))")
        return 0
    from .verify import checkpoint_dataset, load_model

    kwargs = None
    if args.model_kwargs:
        try:
            kwargs = json.loads(args.model_kwargs)
        except json.JSONDecodeError as e:
            raise InputError(f"--model-kwargs is not valid JSON: {e}") from None
        if not args.model:
            raise InputError("--model-kwargs needs --model")
        if not isinstance(kwargs, dict):
            raise InputError("--model-kwargs must be a JSON object, e.g. '{\"width\": 32}'")
    if args.dataset is None and args.checkpoint:
        args.dataset = checkpoint_dataset(args.checkpoint)
    model = load_model(args.model, args.checkpoint, args.dataset or "mnist", kwargs)
    shape = _input_shape(args.dataset, kwargs)
    x = torch.rand((2, *shape))
    export_onnx(model, x, args.out, opset=args.opset)
    print(f"wrote {args.out} (input (batch, {', '.join(map(str, shape))}))")
    return 0


def _input_shape(dataset, kwargs):
    from ..data import dataset_info

    info = dataset_info(dataset or "mnist")
    if not kwargs:
        return info.shape
    s = kwargs.get("in_size", info.size)
    return (kwargs.get("in_channels", info.channels), s, s)
