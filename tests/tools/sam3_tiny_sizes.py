"""``projects/sam3/sam3_image.yaml`` overrides for a tiny ``Sam3Image`` (112 px, one encoder
and one decoder layer, 8 queries), as command-line KEY VALUE strings, shared by the tool tests."""

TINY_SAM3 = [
    "MODEL.SAM3.IMAGE_SIZE", "112", "MODEL.SAM3.VIT.EMBED_DIM", "48", "MODEL.SAM3.VIT.DEPTH", "2",
    "MODEL.SAM3.VIT.NUM_HEADS", "4", "MODEL.SAM3.VIT.GLOBAL_ATT_BLOCKS", "[1]", "MODEL.SAM3.VIT.WINDOW_SIZE", "4",
    "MODEL.SAM3.VIT.PRETRAIN_IMG_SIZE", "28", "MODEL.SAM3.TEXT.WIDTH", "32", "MODEL.SAM3.TEXT.HEADS", "2",
    "MODEL.SAM3.TEXT.LAYERS", "1", "MODEL.SAM3.D_MODEL", "32", "MODEL.SAM3.NUM_HEADS", "4",
    "MODEL.SAM3.DIM_FEEDFORWARD", "64", "MODEL.SAM3.ENCODER.NUM_LAYERS", "1", "MODEL.SAM3.DECODER.NUM_LAYERS", "1",
    "MODEL.SAM3.DECODER.NUM_QUERIES", "8", "MODEL.SAM3.GEOMETRY.NUM_LAYERS", "1",
]  # fmt: skip
