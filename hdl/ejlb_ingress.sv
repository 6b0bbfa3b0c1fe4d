// Accepts the input stream, passes every beat on to the frame FIFO and captures the first HEADER_BYTES bytes
// of each frame for the classifier: one header descriptor per frame, emitted as soon as HEADER_BYTES bytes
// (or the whole frame) have arrived.
//
//   Output    Bits               Meaning
//   d_hdr     HEADER_BYTES*8     frame byte k at bits 8k (tkeep-masked), zero past the frame
//   d_seen    16                 frame bytes in d_hdr (== frame length when d_ended)
//   d_ended   1                  the frame ended within the captured bytes
`resetall
`default_nettype none

import ejlb_pkg::*;  // file scope: Yosys has no header imports

module ejlb_ingress #(
    parameter int DATA_WIDTH = 512
) (
    input  logic                    clk,
    input  logic                    rst,
    input  logic [DATA_WIDTH-1:0]   s_axis_tdata,
    input  logic [DATA_WIDTH/8-1:0] s_axis_tkeep,
    input  logic                    s_axis_tvalid,
    output logic                    s_axis_tready,
    input  logic                    s_axis_tlast,
    input  logic                    room,       // the frame FIFO can take a beat
    output logic                    beat_push,
    output logic                    d_valid,    // header descriptor
    output logic [HEADER_BYTES*8-1:0]         d_hdr,
    output logic [15:0]             d_seen,
    output logic                    d_ended
);
  localparam int B = DATA_WIDTH / 8;
  localparam int NB = (HEADER_BYTES + B - 1) / B;  // beats that cover the header

  logic [15:0] nbeat;  // beat index within the frame (saturates)
  logic sent;          // descriptor already emitted for this frame
  logic [HEADER_BYTES*8-1:0] hdr;
  logic [15:0] seen;

  assign s_axis_tready = room;
  assign beat_push = s_axis_tvalid && s_axis_tready;

  logic [(NB*B)*8-1:0] wide;
  logic [HEADER_BYTES*8-1:0] next_hdr;
  logic [15:0] next_seen;
  logic [DATA_WIDTH-1:0] masked;
  always_comb begin
    for (int l = 0; l < B; l++) masked[8*l+:8] = s_axis_tkeep[l] ? s_axis_tdata[8*l+:8] : 8'd0;
    wide = '0;
    wide[HEADER_BYTES*8-1:0] = nbeat == 0 ? '0 : hdr;
    for (int i = 0; i < NB; i++) if (nbeat == 16'(i)) wide[i*DATA_WIDTH+:DATA_WIDTH] = masked;
    next_hdr = wide[HEADER_BYTES*8-1:0];
    next_seen = (nbeat == 0 ? 16'd0 : seen) + 16'($countones(s_axis_tkeep));
  end

  always_ff @(posedge clk) begin
    d_valid <= 1'b0;
    if (beat_push) begin
      hdr <= next_hdr;
      seen <= next_seen;
      nbeat <= s_axis_tlast ? 16'd0 : (nbeat == 16'hFFFF ? nbeat : nbeat + 1'b1);
      if (!sent && (s_axis_tlast || nbeat == 16'(NB - 1))) begin
        d_valid <= 1'b1;
        d_hdr <= next_hdr;
        d_seen <= next_seen;
        d_ended <= s_axis_tlast;
      end
      sent <= s_axis_tlast ? 1'b0 : (sent || nbeat == 16'(NB - 1));
    end
    if (rst) begin
      nbeat <= '0;
      sent <= 1'b0;
      d_valid <= 1'b0;
    end
  end
endmodule

`resetall
