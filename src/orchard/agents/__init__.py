"""orchard.agents"""
