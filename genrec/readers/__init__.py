"""Raw dataset readers (Amazon 2014/2018, Yelp; the IDGenRec text format is ``Dataset.load``) + k-core + chronology."""
from .amazon import read_amazon2014, read_amazon2018
from .common import Interaction, TextOptions, build_dataset, kcore, kcore_dataset, sequences
from .yelp import read_yelp

__all__ = [
    "Interaction",
    "TextOptions",
    "build_dataset",
    "kcore",
    "kcore_dataset",
    "read_amazon2014",
    "read_amazon2018",
    "read_yelp",
    "sequences",
]
