# CLI unit tests go here.
