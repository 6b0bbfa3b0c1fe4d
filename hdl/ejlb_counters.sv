`resetall
`default_nettype none
import ejlb_regmap_pkg::*;  // file scope: Yosys has no header imports

// 64-bit counters, one update per cycle from the egress (one event per frame), read through the
// register bus with two cycles of latency. Reading a counter's LO word latches its HI word, so
// LO-then-HI is never torn.
//   - global and per-LB counters are registers;
//   - per-member tx counters live in RAM (8192 x 2 x 64 bit): read-modify-write over two cycles
//     with forwarding of the previous result, so back-to-back frames to one member count right.
//     After reset they are cleared one entry per cycle while `ready` holds off the data path.
//
//   Counter vector      Entries                         Order (ejlb.dataplane.tables, regmap)
//   global              N_GLOBAL_COUNTERS               drop_parse_fail, drop_not_lb
//   per LB              NUM_LBS x N_LB_COUNTERS         rx_packets, rx_bytes, rx_v2, rx_v3, then the
//                                                       drops from drop_no_lb_hdr on (LBCNT_*)
//   per member          NUM_LBS x 2^MEMBER_ID_BITS x 2  tx_packets, tx_bytes
module ejlb_counters (
    input  logic                      clk,
    input  logic                      rst,
    input  logic                      ev_valid,
    input  logic [3:0]                ev_reason,   // ejlb_regmap_pkg::DROP_*
    input  logic                      ev_lb_known,
    input  logic [2:0]                ev_lb,
    input  logic [MEMBER_ID_BITS-1:0] ev_member,
    input  logic [1:0]                ev_version,  // 2'b01: v2, 2'b10: v3, 0: not passed stage 3
    input  logic [15:0]               ev_rx_bytes,
    input  logic [15:0]               ev_tx_bytes,
    output logic                      ready,
    input  logic                      rd_en,
    input  logic [ADDR_WIDTH-1:0]     rd_addr,
    output logic [31:0]               rd_data
);
  localparam int NM = NUM_LBS << MEMBER_ID_BITS;
  localparam int MW = MEMBER_ID_BITS + 3;
  logic [NUM_LBS-1:0][N_LB_COUNTERS-1:0][63:0] lbcnt;
  logic [N_GLOBAL_COUNTERS-1:0][63:0] gcnt;
  logic [63:0] m_pkts[NM];
  logic [63:0] m_bytes[NM];

  // ---------------- registers
  always_ff @(posedge clk) begin
    if (ev_valid) begin
      if (!ev_lb_known) begin
        if (ev_reason == DROP_PARSE_FAIL) gcnt[GCNT_DROP_PARSE_FAIL] <= gcnt[GCNT_DROP_PARSE_FAIL] + 1;
        else gcnt[GCNT_DROP_NOT_LB] <= gcnt[GCNT_DROP_NOT_LB] + 1;
      end else begin
        // constant indices with enables: no shifter over the whole counter array
        for (int i = 0; i < NUM_LBS; i++) if (ev_lb == 3'(i)) begin
          lbcnt[i][LBCNT_RX_PACKETS] <= lbcnt[i][LBCNT_RX_PACKETS] + 1;
          lbcnt[i][LBCNT_RX_BYTES] <= lbcnt[i][LBCNT_RX_BYTES] + 64'(ev_rx_bytes);
          if (ev_version[0]) lbcnt[i][LBCNT_RX_V2] <= lbcnt[i][LBCNT_RX_V2] + 1;
          if (ev_version[1]) lbcnt[i][LBCNT_RX_V3] <= lbcnt[i][LBCNT_RX_V3] + 1;
          // the drop counters follow the drop codes from NO_LB_HDR on
          for (int c = LBCNT_DROP_NO_LB_HDR; c < N_LB_COUNTERS; c++)
            if (ev_reason != DROP_FORWARD && int'(ev_reason) - int'(DROP_NO_LB_HDR) == c - LBCNT_DROP_NO_LB_HDR)
              lbcnt[i][c] <= lbcnt[i][c] + 1;
        end
      end
    end
    if (rst) begin
      gcnt <= '0;
      lbcnt <= '0;
    end
  end

  // ---------------- member counters: RAM read-modify-write
  logic [MW:0] clr;  // clear pointer; its top bit is `ready`
  logic u1_v, u2_v;
  logic [MW-1:0] u1_idx, u2_idx, ram_idx;
  logic [15:0] u1_bytes;
  logic [63:0] q_pkts, q_bytes, u2_pkts, u2_bytes, n_pkts, n_bytes;
  assign ready = clr[MW];
  wire up = ev_valid && ev_lb_known && ev_reason == DROP_FORWARD;

  always_comb begin
    // the previous update is not in the RAM output yet: forward it
    n_pkts = (u2_v && u2_idx == u1_idx ? u2_pkts : q_pkts) + 1;
    n_bytes = (u2_v && u2_idx == u1_idx ? u2_bytes : q_bytes) + 64'(u1_bytes);
  end

  always_ff @(posedge clk) begin
    q_pkts <= m_pkts[{ev_lb, ev_member}];
    q_bytes <= m_bytes[{ev_lb, ev_member}];
    u1_v <= up && ready;
    u1_idx <= {ev_lb, ev_member};
    u1_bytes <= ev_tx_bytes;
    u2_v <= u1_v;
    u2_idx <= u1_idx;
    u2_pkts <= n_pkts;
    u2_bytes <= n_bytes;
    if (!ready) begin
      m_pkts[clr[MW-1:0]] <= '0;
      m_bytes[clr[MW-1:0]] <= '0;
      clr <= clr + 1'b1;
    end else if (u1_v) begin
      m_pkts[u1_idx] <= n_pkts;
      m_bytes[u1_idx] <= n_bytes;
    end
    if (rst) begin
      clr <= '0;
      u1_v <= 1'b0;
      u2_v <= 1'b0;
    end
  end

  // ---------------- reads: RAM / register select in the first cycle, LO/HI in the second
  wire [31:0] ra = 32'(rd_addr);
  assign ram_idx = rd_addr[MW+3:4];
  logic [63:0] r_reg, r_pkts, r_bytes;
  logic [1:0] r_src;  // 0 register, 1 member packets, 2 member bytes
  logic r_hi;
  always_ff @(posedge clk) begin
    r_pkts <= m_pkts[ram_idx];
    r_bytes <= m_bytes[ram_idx];
    r_hi <= rd_addr[2];
    r_src <= 2'd0;
    r_reg <= '0;
    if (ra >= GLOBAL_CNT_BASE && ra < GLOBAL_CNT_BASE + 8 * N_GLOBAL_COUNTERS)
      r_reg <= gcnt[rd_addr[3]];
    else if (ra >= LB_CNT_BASE && ra < LB_CNT_BASE + LB_CNT_STRIDE * LB_CNT_COUNT && rd_addr[6:3] < N_LB_COUNTERS)
      r_reg <= lbcnt[rd_addr[9:7]][rd_addr[6:3]];
    else if (ra >= MEMBER_CNT_BASE && ra < MEMBER_CNT_BASE + MEMBER_CNT_STRIDE * MEMBER_CNT_COUNT)
      r_src <= rd_addr[3] ? 2'd2 : 2'd1;
  end

  logic rd_q;
  logic [31:0] hi_latch;
  logic [63:0] val;
  assign val = r_src == 2'd1 ? r_pkts : r_src == 2'd2 ? r_bytes : r_reg;
  always_ff @(posedge clk) begin
    rd_q <= rd_en;
    if (rd_q) begin
      rd_data <= r_hi ? hi_latch : val[31:0];
      if (!r_hi) hi_latch <= val[63:32];
    end
  end
endmodule

`resetall
