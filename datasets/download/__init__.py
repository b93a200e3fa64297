"""Download, verify, extract and convert the paper's datasets and checkpoints.

One command per target (``python -m datasets.download --help``)::

    python -m datasets.download voc --root=data
    python -m datasets.download coco --root=data
    python -m datasets.download msrc --root=data
    python -m datasets.download camvid --root=data
    python -m datasets.download pretrained --root=pretrained

``sources.json`` lists every file (name, URL, file name, checksum);
``fetch`` downloads with ``keras.utils.get_file`` and verifies, ``prepare``
extracts and converts with the converters of ``datasets/``. See
docs/datasets.md, "Download".
"""
