"""torchxrayvision DenseNet-121 export for the ``radsight-xrv`` adapter."""
