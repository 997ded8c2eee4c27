"""orchard.demo"""
