"""Local fakes of the target systems, served over real HTTP on 127.0.0.1.

Why: the demo and the tests must exercise the real HTTP paths (auth headers, paging, error
shapes, limits, dropped connections) without the real services. Import the submodules directly
(``integration_hub.sandbox.server``, ``integration_hub.sandbox.xledger``); this package imports
nothing on purpose, so importing it stays cheap.
"""
