"""Imported last by the training children's fork server (`worker.runner`'s preload list): every
object the server has made by then (torch, scikit-learn, the trainers) moves to the garbage
collector's permanent generation. A child's collections then skip them: without this the first
collection in a child walked every inherited object and wrote to its header, so the child copied
those pages from the server (copy-on-write) before it did anything, about 0.2 s of a training's
start measured on the 2-CPU VM, and memory the children could have shared. Python's `gc.freeze`
documentation describes this use."""

import gc

gc.freeze()
