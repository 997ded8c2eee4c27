"""orchard.store"""
