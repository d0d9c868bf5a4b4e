"""The whole accelerator, run: FINN's stitched all-RTL design simulated in Verilator.

stitch.py (FINN's InsertDWC/InsertFIFO, every node's RTL, the top module), testbench.py (the
C++ testbench, Verilator build cache, one run), design.py (deep-FIFO run, FIFO sizing,
confirming run), sizing.py (finn-plus's depth rule, cost, folding config), records.py (the
pydantic records), child.py (the finn-plus child process), api.py (`simulate_build`, the parent
side of `fpgaslim simulate`).
"""
