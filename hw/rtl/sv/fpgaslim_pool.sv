/****************************************************************************
 * fpgaslim: hand-written RTL for FINN layers that finn-plus 1.6.1 ships only
 * as HLS on Zynq-7000 / UltraScale+ parts (SPDX-License-Identifier: BSD-3-Clause)
 *
 * @brief	Pooling over windows of K words (FINN's Pool op after a depthwise
 *		ConvolutionInputGenerator, finn-hlslib Pool_batch): the stream
 *		holds, per output pixel and channel fold, the K window elements
 *		of PE channels one word each; every K input words make one
 *		output word of PE lanes.
 *		FUNC 0 MaxPool: the largest element (signed or unsigned).
 *		FUNC 1 AccPool: the sum.
 *		FUNC 2 QuantAvgPool: the sum shifted right by SHIFT (arithmetic
 *		       for signed inputs), as FINN's Python execution computes it.
 *		FUNC 3 AvgPool: the sum divided by K, truncated toward zero
 *		       (finn-hlslib's `accu/size`).
 *		The sum is held in ACC_WIDTH bits; the result is truncated to
 *		O_WIDTH bits (FINN sizes both so that nothing is lost).
 ***************************************************************************/

module fpgaslim_pool #(
	int unsigned  PE = 1,
	int unsigned  K = 4,
	int unsigned  FUNC = 0,
	int unsigned  I_WIDTH = 8,
	bit  I_SIGNED = 0,
	int unsigned  ACC_WIDTH = 10,
	int unsigned  O_WIDTH = 8,
	int unsigned  SHIFT = 0,
	int unsigned  I_BITS = PE*I_WIDTH,
	int unsigned  O_BITS = PE*O_WIDTH
)(
	input	logic  clk,
	input	logic  rst,

	input	logic [I_BITS-1:0]  idat,
	input	logic  ivld,
	output	logic  irdy,

	output	logic [O_BITS-1:0]  odat,
	output	logic  ovld,
	input	logic  ordy
);

	initial begin
		if(FUNC > 3) begin
			$error("%m: unsupported FUNC %0d", FUNC);
			$finish;
		end
	end

	localparam int unsigned  AW = FUNC == 0? I_WIDTH : ACC_WIDTH;
	localparam int unsigned  CNT_W = K > 1? $clog2(K) : 1;

	uwire  srdy;
	logic [CNT_W-1:0]  Cnt = '0;
	uwire  last = (Cnt == CNT_W'(K-1));
	uwire  take = ivld && (!last || srdy);
	assign	irdy = !last || srdy;

	always_ff @(posedge clk) begin
		if(rst)  Cnt <= '0;
		else if(take)  Cnt <= last? '0 : Cnt + 1;
	end

	uwire [PE*O_WIDTH-1:0]  r;
	for(genvar  i = 0; i < PE; i++) begin : genLane
		uwire [I_WIDTH-1:0]  x = idat[i*I_WIDTH +: I_WIDTH];
		uwire signed [AW:0]  xs = I_SIGNED? $signed({x[I_WIDTH-1], x}) : $signed({1'b0, x});
		logic signed [AW:0]  Acc;	// the window so far (one bit of sign room)
		uwire signed [AW:0]  nxt;
		if(FUNC == 0) begin : genMax
			assign	nxt = (Cnt == '0 || xs > Acc)? xs : Acc;
		end : genMax
		else begin : genSum
			assign	nxt = (Cnt == '0)? xs : Acc + xs;
		end : genSum
		always_ff @(posedge clk) begin
			if(take)  Acc <= nxt;
		end

		uwire signed [AW:0]  res;
		if(FUNC == 2) begin : genShift
			assign	res = nxt >>> SHIFT;
		end : genShift
		else if(FUNC == 3) begin : genDiv
			// truncation toward zero, as C++ integer division
			uwire signed [AW:0]  kk = (AW+1)'(K);
			assign	res = nxt / kk;
		end : genDiv
		else begin : genPass
			assign	res = nxt;
		end : genPass
		assign	r[i*O_WIDTH +: O_WIDTH] = O_WIDTH'(res);
	end : genLane

	uwire [PE*O_WIDTH-1:0]  o;
	fpgaslim_skid #(.DATA_WIDTH(PE*O_WIDTH)) obuf (
		.clk, .rst,
		.idat(r), .ivld(take && last), .irdy(srdy),
		.odat(o), .ovld, .ordy
	);
	assign	odat = O_BITS'(o);

endmodule : fpgaslim_pool
