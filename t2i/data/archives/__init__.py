"""Build CUB-200-2011 and COCO 2014 in the layouts t2i reads, from the archives their authors publish.

Nothing is downloaded: the user passes the archive files.

CUB (``data=cub``, AttnGAN's layout, read by :class:`t2i.data.cub.CUBSource`) from

* ``CUB_200_2011.tgz`` (Caltech): ``CUB_200_2011/{images.txt, classes.txt, image_class_labels.txt,
  bounding_boxes.txt, train_test_split.txt, images/<class>/<name>.jpg, attributes/...}`` and the
  attribute names ``attributes.txt`` at the top of the archive, beside ``CUB_200_2011/``;
* Reed et al.'s ``cvpr2016_cub.tar.gz`` (CVPR 2016, the captions AttnGAN's ``birds.zip`` copies):
  ``text_c10/<class>/<name>.txt`` (10 captions an image), ``trainvalclasses.txt`` (150 species) and
  ``testclasses.txt`` (50), possibly under one top folder;

writes ``CUB_200_2011/`` and ``attributes.txt`` as in the archive, ``text/<class>/<name>.txt`` and
``{train,test}/filenames.json`` + ``class_info.json`` (the lists AttnGAN keeps as pickles: train = the
150 trainval species, test = the 50 test species, in ``images.txt`` order; the class id is CUB's).

COCO 2014 from ``train2014.zip``, ``val2014.zip`` and ``annotations_trainval2014.zip``: AttnGAN's
layout (``data=coco``: ``images/``, ``text/<name>.txt`` with every caption of the image in annotation-id
order, ``{train,test}/filenames.json``: train = train2014, test = val2014) or the official one
(``data=coco_json``: ``annotations/captions_{train,val}2014.json``, ``train2014/``, ``val2014/``).

Each archive's size, sha256 and md5 are computed and recorded in ``<root>/prepared.json`` (written
last); where a digest is published (:data:`PUBLISHED`) an archive that does not match is refused
unless ``checksum="record"``. A truncated archive, one that is not the one asked for, or one that
lacks files its own tables list, is refused with one line. The set is built in a hidden folder beside
the root and moved into place at the end, so an interrupted run leaves nothing half-written and an
existing root is replaced only with ``force``.
"""

from t2i.data.archives.coco import COCO_FOLDERS, COCO_LAYOUTS, prepare_coco
from t2i.data.archives.common import (CHECKSUM_POLICIES, MANIFEST, PUBLISHED, Published, archive_digest,
                                      check_archive)
from t2i.data.archives.cub import CUB_TABLES, prepare_cub

__all__ = ["PUBLISHED", "Published", "archive_digest", "check_archive", "prepare_cub", "prepare_coco",
           "MANIFEST", "CHECKSUM_POLICIES", "CUB_TABLES", "COCO_FOLDERS", "COCO_LAYOUTS"]
