"""orchard.runtime"""
