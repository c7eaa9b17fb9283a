"""Pure renderers: settings in, file text out. Each rendered file has exactly one home here.

The same text lands in the ConfigMaps the components create and in the files the local
rehearsal runs, so a broken script fails a test on this machine before it reaches a cluster.
"""
