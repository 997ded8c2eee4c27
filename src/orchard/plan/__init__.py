"""orchard.plan"""
