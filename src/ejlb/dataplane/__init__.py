"""Data planes: the table model, the reference model, the software LB and the FPGA driver."""
