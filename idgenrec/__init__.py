"""The top of the toolkit: the ``idgenrec`` command line and the demo, which tie every layer together.

The layers below (``genrec`` core, ``tokenization``, ``idgen``, ``zeroshot``, ``pretrain``, ``finetune``) import
downward only; this package alone may import all of them.
"""
