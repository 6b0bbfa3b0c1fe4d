"""Data planes: the table model, the reference model, the software LB and the FPGA driver.

    tables     the six tables, diffs, verdict codes, counters, the Backend protocol (one definition)
    model      reference pipeline: process(tables, frame) -> Result (the oracle)
    corpus     seeded conformance frames with the model's verdicts (shared with the HDL tests)
    software   SoftwareLB: native L4 forwarder (csrc/swlb.c) behind the Backend protocol
    backends   create_backend(name, config, **options): memory | reference | software | fpga | fpga-sim
    metrics    Prometheus collector over a backend's counters
"""
