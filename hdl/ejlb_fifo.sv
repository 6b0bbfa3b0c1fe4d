// Synchronous first-word-fall-through FIFO: `rd_data` is the head whenever `rd_valid`.
// Used for the frame beats and for the per-frame verdicts between classifier and egress.
//
//   Port           Width   Meaning
//   wr_en/wr_data  WIDTH   push (ignored while full)
//   rd_en/rd_data  WIDTH   pop the head (rd_data is valid whenever rd_valid)
//   full           1       DEPTH entries held
`resetall
`default_nettype none

module ejlb_fifo #(
    parameter int WIDTH = 8,
    parameter int DEPTH = 32  // power of two
) (
    input  logic             clk,
    input  logic             rst,
    input  logic             wr_en,
    input  logic [WIDTH-1:0] wr_data,
    output logic             full,
    input  logic             rd_en,
    output logic [WIDTH-1:0] rd_data,
    output logic             rd_valid
);
  localparam int AW = $clog2(DEPTH);
  logic [WIDTH-1:0] mem[DEPTH];
  logic [AW:0] wp, rp;

  assign full = (wp[AW] != rp[AW]) && (wp[AW-1:0] == rp[AW-1:0]);
  assign rd_valid = wp != rp;
  assign rd_data = mem[rp[AW-1:0]];

  always_ff @(posedge clk) begin
    if (wr_en && !full) mem[wp[AW-1:0]] <= wr_data;
    if (rst) begin
      wp <= '0;
      rp <= '0;
    end else begin
      if (wr_en && !full) wp <= wp + 1'b1;
      if (rd_en && rd_valid) rp <= rp + 1'b1;
    end
  end
endmodule

`resetall
