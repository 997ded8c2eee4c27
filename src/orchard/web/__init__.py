"""The live web dashboard (`orchard web`): an ASGI app over the state store (`web.app`), its pages (`web.pages`)
and the server that binds it (`web.serve`)."""
