"""The CDK app of ragserve (``python -m infra.app``, see cdk.json).

aws_cdk is imported only under infra/: the runtime package (layers/ragserve) and the
functions never depend on it.
"""
