"""nnlint inside the tools that run training: Lightning, the HF Trainer, IPython.

`nnlint.integrations.lightning.NNLintCallback` and
`nnlint.integrations.transformers.NNLintCallback` check the model at the first
training batch; `%load_ext nnlint` gives the `%nnlint` and `%%nnlint` magics
(`nnlint.integrations.ipython`). Each module imports its framework when it is
imported itself, so this package and `import nnlint` stay free of torch.
"""
