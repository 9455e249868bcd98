"""Deployment beyond the fp32 export: int8 ONNX (:mod:`sknet.deploy.quantize`), calibrated on real images
(:mod:`sknet.deploy.calibration`), and ONNX files run like models (:mod:`sknet.deploy.onnx_model`) by
``sknet eval`` and ``sknet predict``. Needs ``pip install 'sknet[export]'`` (onnxruntime)."""
