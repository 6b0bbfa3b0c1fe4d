// ejlb load balancer: AXI4-Stream in -> classify + rewrite -> AXI4-Stream out, tables and
// counters through AXI4-Lite (register map: ejlb_regmap_pkg, generated from
// src/ejlb/dataplane/regmap.py). Synchronous active-high reset. See hdl/README.md.
//
//   s_axis -> ingress --beats--> frame FIFO ------------------------> egress -> m_axis
//                     --header--> classify (S1..S6) -> verdict FIFO -->   |
//                                     ^ tables (shadow/active)            v counters
//
//   Interface  Signals                      Carries
//   s_axis     tdata, tkeep, tvalid/ready,  input frames, byte k of a beat at tdata[8k+:8]
//              tlast
//   m_axis     the same + tuser             output frames; tuser = 1 on the last beat: aborted
//   s_axil     AXI4-Lite, 32-bit data       tables and counters (the register map, hdl/README.md)
`resetall
`default_nettype none

import ejlb_regmap_pkg::*;  // file scope: Yosys has no header imports
import ejlb_pkg::*;

module ejlb_lb
#(
    parameter int DATA_WIDTH = 512,
    parameter int FIFO_DEPTH = 64  // frame beats in flight; >= classifier latency + header beats
) (
    input  logic                    clk,
    input  logic                    rst,
    input  logic [DATA_WIDTH-1:0]   s_axis_tdata,
    input  logic [DATA_WIDTH/8-1:0] s_axis_tkeep,
    input  logic                    s_axis_tvalid,
    output logic                    s_axis_tready,
    input  logic                    s_axis_tlast,
    output logic [DATA_WIDTH-1:0]   m_axis_tdata,
    output logic [DATA_WIDTH/8-1:0] m_axis_tkeep,
    output logic                    m_axis_tvalid,
    input  logic                    m_axis_tready,
    output logic                    m_axis_tlast,
    output logic                    m_axis_tuser,  // 1 on the last beat: frame aborted, discard
    input  logic [ADDR_WIDTH-1:0]   s_axil_awaddr,
    input  logic [2:0]              s_axil_awprot,
    input  logic                    s_axil_awvalid,
    output logic                    s_axil_awready,
    input  logic [31:0]             s_axil_wdata,
    input  logic [3:0]              s_axil_wstrb,
    input  logic                    s_axil_wvalid,
    output logic                    s_axil_wready,
    output logic [1:0]              s_axil_bresp,
    output logic                    s_axil_bvalid,
    input  logic                    s_axil_bready,
    input  logic [ADDR_WIDTH-1:0]   s_axil_araddr,
    input  logic [2:0]              s_axil_arprot,
    input  logic                    s_axil_arvalid,
    output logic                    s_axil_arready,
    output logic [31:0]             s_axil_rdata,
    output logic [1:0]              s_axil_rresp,
    output logic                    s_axil_rvalid,
    input  logic                    s_axil_rready
);
  localparam int B = DATA_WIDTH / 8;

  // ---------------- register bus
  logic wr_en, wr_ready, rd_en, cnt_ready;
  logic [ADDR_WIDTH-1:0] wr_addr, rd_addr;
  logic [31:0] wr_data, rd_data, cnt_rd_data;
  ejlb_axil_slave #(.ADDR_WIDTH(ADDR_WIDTH)) axil (
      .clk, .rst, .s_axil_awaddr, .s_axil_awprot, .s_axil_awvalid, .s_axil_awready, .s_axil_wdata,
      .s_axil_wstrb, .s_axil_wvalid, .s_axil_wready, .s_axil_bresp, .s_axil_bvalid, .s_axil_bready,
      .s_axil_araddr, .s_axil_arprot, .s_axil_arvalid, .s_axil_arready, .s_axil_rdata,
      .s_axil_rresp, .s_axil_rvalid, .s_axil_rready, .wr_en, .wr_addr, .wr_data, .wr_ready, .rd_en,
      .rd_addr, .rd_data);

  logic bank, busy;
  logic [31:0] commits;
  logic [NUM_LBS-1:0][7:0][31:0] lb_act;
  logic [NUM_LBS*NUM_EPOCHS-1:0][4:0][31:0] ep_act;
  logic [N_SENDERS-1:0][4:0][31:0] snd_act;
  logic [13:0] cal_addr;
  logic [31:0] cal_data;
  logic [3+MEMBER_ID_BITS:0] mem_addr;
  logic [32*7-1:0] mem_data;
  ejlb_tables tables (
      .clk, .rst, .wr_en, .wr_addr, .wr_data, .wr_ready, .bank, .busy, .commits, .lb_act, .ep_act,
      .snd_act, .cal_addr, .cal_data, .mem_addr, .mem_data);

  // control registers, read with the same two-cycle latency as the counters
  logic [31:0] ctrl_q;
  logic ctrl_sel;
  always_ff @(posedge clk) begin
    ctrl_sel <= rd_addr < ADDR_WIDTH'(CTRL_BASE + CTRL_STRIDE);
    case (rd_addr[5:2])
      4'(CTRL_W_ID): ctrl_q <= ID_VALUE;
      4'(CTRL_W_VERSION): ctrl_q <= VERSION_VALUE;
      4'(CTRL_W_PARAMS): ctrl_q <= 32'(B) << CTRL_DATA_BYTES_LSB | 32'(N_SENDERS) << CTRL_N_SENDERS_LSB
                                   | 32'(MEMBER_ID_BITS) << CTRL_MEMBER_ID_BITS_LSB;
      4'(CTRL_W_STATUS): ctrl_q <= 32'(bank) << CTRL_ACTIVE_BANK_LSB | 32'(busy) << CTRL_BUSY_LSB;
      4'(CTRL_W_COMMITS): ctrl_q <= commits;
      default: ctrl_q <= '0;
    endcase
  end
  assign rd_data = ctrl_sel ? ctrl_q : cnt_rd_data;

  // ---------------- data path
  localparam int FW = DATA_WIDTH + B + 1;
  logic f_full, f_valid, f_rd, beat_push;
  logic [FW-1:0] f_out;
  logic d_valid, d_ended;
  logic [HEADER_BYTES*8-1:0] d_hdr;
  logic [15:0] d_seen;
  ejlb_ingress #(.DATA_WIDTH(DATA_WIDTH)) ingress (
      .clk, .rst, .s_axis_tdata, .s_axis_tkeep, .s_axis_tvalid, .s_axis_tready, .s_axis_tlast,
      .room(!f_full && cnt_ready), .beat_push, .d_valid, .d_hdr, .d_seen, .d_ended);

  ejlb_fifo #(.WIDTH(FW), .DEPTH(FIFO_DEPTH)) frame_fifo (
      .clk, .rst, .wr_en(beat_push), .wr_data({s_axis_tlast, s_axis_tkeep, s_axis_tdata}),
      .full(f_full), .rd_en(f_rd), .rd_data(f_out), .rd_valid(f_valid));

  logic c_valid;
  ejlb_pkg::verdict_t c_verdict;
  ejlb_classify classify (
      .clk, .rst, .in_valid(d_valid), .in_hdr(d_hdr), .in_seen(d_seen), .in_ended(d_ended),
      .lb_act, .ep_act, .snd_act, .bank, .cal_addr, .cal_data, .mem_addr, .mem_data,
      .v_valid(c_valid), .v(c_verdict));

  // every frame in the classifier or verdict FIFO still has beats in the frame FIFO or the
  // egress window, so 2 * FIFO_DEPTH verdict entries never overflow
  logic v_valid, v_rd, v_full;
  ejlb_pkg::verdict_t v_out;
  ejlb_fifo #(.WIDTH($bits(c_verdict)), .DEPTH(2 * FIFO_DEPTH)) verdict_fifo (
      .clk, .rst, .wr_en(c_valid), .wr_data(c_verdict), .full(v_full), .rd_en(v_rd), .rd_data(v_out),
      .rd_valid(v_valid));

  logic ev_valid, ev_lb_known;
  logic [3:0] ev_reason;
  logic [2:0] ev_lb;
  logic [MEMBER_ID_BITS-1:0] ev_member;
  logic [1:0] ev_version;
  logic [15:0] ev_rx_bytes, ev_tx_bytes;
  ejlb_egress #(.DATA_WIDTH(DATA_WIDTH)) egress (
      .clk, .rst, .f_valid, .f_data(f_out[DATA_WIDTH-1:0]), .f_keep(f_out[DATA_WIDTH+:B]),
      .f_last(f_out[FW-1]), .f_rd, .v_valid, .v(v_out), .v_rd,
      .m_axis_tdata, .m_axis_tkeep, .m_axis_tvalid, .m_axis_tready, .m_axis_tlast, .m_axis_tuser,
      .ev_valid, .ev_reason, .ev_lb_known, .ev_lb, .ev_member, .ev_version, .ev_rx_bytes, .ev_tx_bytes);

  ejlb_counters counters (
      .clk, .rst, .ev_valid, .ev_reason, .ev_lb_known, .ev_lb, .ev_member, .ev_version, .ev_rx_bytes,
      .ev_tx_bytes, .ready(cnt_ready), .rd_en, .rd_addr, .rd_data(cnt_rd_data));
endmodule

`resetall
