"""Deployment beyond the fp32 export: int8 ONNX (:mod:`sknet.deploy.quantize`, ONNX Runtime) and int8
TorchScript (:mod:`sknet.deploy.quantize_torch`, PyTorch's x86 int8), calibrated on real images
(:mod:`sknet.deploy.calibration`), and exported files run like models (:mod:`sknet.deploy.onnx_model`,
:mod:`sknet.deploy.scripted`) by ``sknet eval`` and ``sknet predict``. The ONNX path needs
``pip install 'sknet[export]'`` (onnxruntime); the TorchScript path torch alone."""
