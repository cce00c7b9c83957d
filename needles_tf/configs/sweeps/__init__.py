"""Sweep files for `python -m needles_tf.sweep`: one per finding of Pawlowski et al. 2019."""
