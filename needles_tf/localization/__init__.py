"""Weak localization: saliency maps at input resolution."""
