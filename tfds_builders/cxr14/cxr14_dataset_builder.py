"""NIH ChestX-ray14: 14 thoracic findings, multi-label, with boxes on part of the test set.

Wang et al. (CVPR 2017), as used by Yao et al. 2018 (Yao et al., 2018) §4.1-4.2: the
official patient-wise train/test lists; validation is a patient-wise 25% of the
official training list; images resized from 1024² to 512² with
`skimage.transform.resize` (config `size512`), or kept (`size1024`). See
README.md for the dataset card.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from . import records

FINDINGS = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)


@dataclasses.dataclass
class Cxr14Config(tfds.core.BuilderConfig):
    """Image side; `validation_fraction` of the training patients go to validation."""

    image_size: int = 512
    validation_fraction: float = 0.25
    seed: int = 2018

    @property
    def task(self) -> str:
        """What needles_tf.evaluate measures on it (needles_tf.evaluation): AUC per finding,
        and DICE and IoBB per finding with boxes."""
        return "findings"


class Builder(tfds.core.GeneratorBasedBuilder):
    """DatasetBuilder for NIH ChestX-ray14."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        Cxr14Config(
            name="size512", description="Resized to 512x512 (Yao et al. 2018 §4.2).", image_size=512
        ),
        Cxr14Config(name="size1024", description="The original 1024x1024 images.", image_size=1024),
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "size512"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download NIH ChestX-ray14 (https://nihcc.app.box.com/v/ChestXray-NIHCC):
    extract images_001.tar.gz ... images_012.tar.gz into one images/ folder, and
    put Data_Entry_2017.csv (or Data_Entry_2017_v2020.csv renamed),
    BBox_List_2017.csv, train_val_list.txt and test_list.txt beside it. Pass
    that folder as --manual_dir.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.image_size
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(
                        shape=(size, size, 1), doc="Frontal chest X-ray, grey."
                    ),
                    "label": tfds.features.Sequence(
                        tfds.features.ClassLabel(names=FINDINGS),
                        doc="The findings of the image; empty for 'No Finding'.",
                    ),
                    "bboxes": tfds.features.Sequence(
                        {
                            "bbox": tfds.features.BBoxFeature(),
                            "label": tfds.features.ClassLabel(names=FINDINGS),
                        },
                        doc="Radiologists' boxes (test images of BBox_List_2017.csv only).",
                    ),
                    "image_id": tfds.features.Text(doc="File name, e.g. 00000001_000.png."),
                    "patient_id": tfds.features.Scalar(np.int64, doc="Patient ID."),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://nihcc.app.box.com/v/ChestXray-NIHCC",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        config = self.builder_config
        index = records.read_index(dl_manager.manual_dir, FINDINGS)
        splits = records.split_by_patient(index, config.validation_fraction, config.seed)
        return {split: self._generate_examples(index, names) for split, names in splits.items()}

    def _generate_examples(self, index: records.Index, names: list[str]):
        size = self.builder_config.image_size
        for name in names:
            entry = index.entries[name]
            yield (
                name,
                {
                    "image": records.read_image(index.images_dir / name, size),
                    "label": list(entry.findings),
                    "bboxes": [
                        {"bbox": box.relative(entry.width, entry.height), "label": box.finding}
                        for box in index.boxes.get(name, [])
                    ],
                    "image_id": name,
                    "patient_id": entry.patient_id,
                },
            )
