"""orchard.vcs"""
