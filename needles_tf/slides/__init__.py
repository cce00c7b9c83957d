"""Whole-slide images: reading by region and level, tissue masks, pyramidal heatmaps."""
