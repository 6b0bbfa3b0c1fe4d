// Rewrites and emits one frame at a time from the frame FIFO under the classifier's verdict.
// A window of NW consecutive input beats (the current one plus the beats the 16-byte strip pulls
// bytes from) slides over the stream without regard to frame boundaries, so a new frame can start
// in the cycle after the previous one ends. Output byte j of a frame is
//   j <  OUT_HEADER_BYTES : the rewritten header from the verdict (already stripped, zero past the packet)
//   j >= OUT_HEADER_BYTES : input byte j + 16 (stripped) or j (kept), taken from the window
// and the frame ends at the verdict's length; input beats past it (Ethernet padding, the beat the
// strip made vanish) are drained at one beat per cycle. A frame longer than the classifier could
// see that turns out shorter than its IP header claims ends at once with tuser = 1 (abort, the
// MAC discards it) and counts as a parse failure, like the reference model's drop.
//
// Verdict fields (ejlb_pkg::verdict_t) and what the egress does with them:
//
//   Field      Bits                 Use
//   reason     4                    0 forwards the frame; else it is drained and only counted
//   lb_known   1                    the counter event names an LB instance (else a global drop)
//   lb         3                    that instance
//   member     16                   its calendar entry: the member counted for a forwarded frame
//   version    2                    {v3, v2}: which per-LB version counter the frame adds to
//   strip      1                    output byte j >= OUT_HEADER_BYTES is input byte j + 16
//   len        16                   output frame length (padded to 60); tkeep of the last beat
//   need_len   16                   a shorter input frame is aborted (tuser) and a parse failure
//   hdr        OUT_HEADER_BYTES*8   the first output bytes (byte k at bits 8k)
`resetall
`default_nettype none

import ejlb_regmap_pkg::*;  // file scope: Yosys has no header imports
import ejlb_pkg::*;

module ejlb_egress
#(
    parameter int DATA_WIDTH = 512
) (
    input  logic                      clk,
    input  logic                      rst,
    // frame FIFO head
    input  logic                      f_valid,
    input  logic [DATA_WIDTH-1:0]     f_data,
    input  logic [DATA_WIDTH/8-1:0]   f_keep,
    input  logic                      f_last,
    output logic                      f_rd,
    // verdict FIFO head
    input  logic                      v_valid,
    input  ejlb_pkg::verdict_t        v,
    output logic                      v_rd,
    // output stream
    output logic [DATA_WIDTH-1:0]     m_axis_tdata,
    output logic [DATA_WIDTH/8-1:0]   m_axis_tkeep,
    output logic                      m_axis_tvalid,
    input  logic                      m_axis_tready,
    output logic                      m_axis_tlast,
    output logic                      m_axis_tuser,
    // one counter event per frame
    output logic                      ev_valid,
    output logic [3:0]                ev_reason,
    output logic                      ev_lb_known,
    output logic [2:0]                ev_lb,
    output logic [MEMBER_ID_BITS-1:0] ev_member,
    output logic [1:0]                ev_version,
    output logic [15:0]               ev_rx_bytes,
    output logic [15:0]               ev_tx_bytes
);
  localparam int B = DATA_WIDTH / 8;
  localparam int NW = 1 + (16 + B - 1) / B;
  localparam int HEADER_BEATS = (OUT_HEADER_BYTES + B - 1) / B;  // beats the verdict's header covers

  // window
  logic [DATA_WIDTH-1:0] w_data[NW];
  logic [B-1:0] w_keep[NW];
  logic [NW-1:0] w_last, w_valid;

  // current frame
  logic busy, in_done, out_done;
  logic [15:0] obeat, ibeat, lin;
  ejlb_pkg::verdict_t r;  // the current frame's verdict

  logic adv, fwd, vis, window_ok, trunc, emit, pop, out_last, finish, load;
  int lastpos;
  logic [15:0] lin_vis, lin_pop;
  logic [NW*DATA_WIDTH-1:0] wbytes;
  logic [(HEADER_BEATS+1)*DATA_WIDTH-1:0] hwide;
  logic [DATA_WIDTH-1:0] hb, ob;
  logic [B-1:0] okeep;

  always_comb begin
    adv = !m_axis_tvalid || m_axis_tready;
    fwd = r.reason == DROP_FORWARD;
    lastpos = NW;
    for (int k = NW - 1; k >= 0; k--) if (w_valid[k] && w_last[k]) lastpos = k;
    vis = !in_done && lastpos < NW;
    lin_vis = (ibeat + 16'(lastpos)) * 16'(B) + 16'($countones(w_keep[lastpos < NW ? lastpos : 0]));
    lin_pop = ibeat * 16'(B) + 16'($countones(w_keep[0]));
    window_ok = in_done || vis || &w_valid;
    trunc = vis && lin_vis < r.need_len;
    emit = busy && adv && fwd && !out_done && window_ok;
    out_last = (obeat + 1'b1) * 16'(B) >= r.len || trunc;
    pop = busy && adv && !in_done && w_valid[0] && (emit || !fwd || out_done);
    finish = busy && adv && (in_done || (pop && w_last[0])) && (!fwd || out_done || (emit && out_last));
    load = v_valid && (!busy || finish);
    v_rd = load;

    // output bytes
    for (int k = 0; k < NW; k++) wbytes[k*DATA_WIDTH+:DATA_WIDTH] = w_data[k];
    hwide = '0;
    hwide[OUT_HEADER_BYTES*8-1:0] = r.hdr;
    hb = '0;
    for (int i = 0; i < HEADER_BEATS; i++) if (obeat == 16'(i)) hb = hwide[i*DATA_WIDTH+:DATA_WIDTH];
    for (int l = 0; l < B; l++) begin
      logic [15:0] j;
      j = obeat * 16'(B) + 16'(l);
      okeep[l] = j < r.len;
      if (!okeep[l]) ob[8*l+:8] = 8'd0;
      else if (j < 16'(OUT_HEADER_BYTES)) ob[8*l+:8] = hb[8*l+:8];
      else ob[8*l+:8] = r.strip ? wbytes[8*(l+16)+:8] : wbytes[8*l+:8];
    end
  end

  // window: pop the head, then refill from the FIFO into the first free slot
  logic [NW-1:0] nv;
  always_comb begin
    nv = pop ? (w_valid >> 1) : w_valid;
    f_rd = f_valid && !nv[NW-1];
  end
  always_ff @(posedge clk) begin
    if (pop) begin
      for (int k = 0; k < NW - 1; k++) begin
        w_data[k] <= w_data[k+1];
        w_keep[k] <= w_keep[k+1];
        w_last[k] <= w_last[k+1];
      end
    end
    for (int k = 0; k < NW; k++)
      if (f_rd && !nv[k] && (k == 0 || nv[k-1])) begin
        w_data[k] <= f_data;
        w_keep[k] <= f_keep;
        w_last[k] <= f_last;
      end
    w_valid <= f_rd ? (nv << 1) | 1'b1 : nv;
    if (rst) w_valid <= '0;
  end

  // frame state, output register, counter event
  always_ff @(posedge clk) begin
    ev_valid <= 1'b0;
    if (adv) m_axis_tvalid <= 1'b0;
    if (emit) begin
      m_axis_tvalid <= 1'b1;
      m_axis_tdata <= ob;
      m_axis_tkeep <= out_last && !trunc ? okeep : '1;
      m_axis_tlast <= out_last;
      m_axis_tuser <= out_last && trunc;
      obeat <= obeat + 1'b1;
      if (out_last) out_done <= 1'b1;
    end
    if (pop) begin
      ibeat <= ibeat + 1'b1;
      if (w_last[0]) begin
        in_done <= 1'b1;
        lin <= lin_pop;
      end
    end
    if (finish) begin
      logic [15:0] n;
      logic short;
      n = in_done ? lin : lin_pop;
      short = n < r.need_len;
      ev_valid <= 1'b1;
      ev_reason <= short ? DROP_PARSE_FAIL : r.reason;
      ev_lb_known <= short ? 1'b0 : r.lb_known;
      ev_lb <= r.lb;
      ev_member <= r.member[MEMBER_ID_BITS-1:0];
      ev_version <= r.version;
      ev_rx_bytes <= n;
      ev_tx_bytes <= r.len;
      busy <= 1'b0;
    end
    if (load) begin
      busy <= 1'b1;
      in_done <= 1'b0;
      out_done <= 1'b0;
      obeat <= '0;
      ibeat <= '0;
      r <= v;
    end
    if (rst) begin
      busy <= 1'b0;
      m_axis_tvalid <= 1'b0;
      ev_valid <= 1'b0;
    end
  end
endmodule

`resetall
