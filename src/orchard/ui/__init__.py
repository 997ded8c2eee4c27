"""orchard.ui"""
