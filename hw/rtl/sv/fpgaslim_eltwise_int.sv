/****************************************************************************
 * fpgaslim: hand-written RTL for FINN layers that finn-plus 1.6.1 ships only
 * as HLS on Zynq-7000 / UltraScale+ parts (SPDX-License-Identifier: BSD-3-Clause)
 *
 * @brief	Integer elementwise binary operation of two streams, or of one
 *		stream and a constant (FINN's ElementwiseAdd / ElementwiseSub /
 *		ElementwiseMul with integer operands):
 *		  out[i] = a[i] OP b[i]   for each of the PE lanes of a word.
 *		The operands may differ in width and signedness; each is
 *		extended to O_WIDTH (two's complement) before the operation, so
 *		the result is exact whenever FINN's output datatype holds it.
 *		B_CONST: the right-hand side is the constant table B_INIT,
 *		read word by word in stream order and repeated every B_WORDS
 *		words (a per-channel constant repeats every C/PE words, a
 *		scalar every word); the generator finds the period.
 *		One result register (a skid buffer): one word per cycle.
 ***************************************************************************/

module fpgaslim_eltwise_int #(
	parameter  OP = "ADD",	// "ADD" (a+b), "SUB" (a-b), "MUL" (a*b)
	int unsigned  PE = 1,
	int unsigned  A_WIDTH = 8,
	bit  A_SIGNED = 1,
	int unsigned  B_WIDTH = 8,
	bit  B_SIGNED = 1,
	int unsigned  O_WIDTH = 9,
	bit  B_CONST = 0,
	int unsigned  B_WORDS = 1,
	parameter logic [B_WORDS*PE*B_WIDTH-1:0]  B_INIT = '0,
	int unsigned  A_BITS = PE*A_WIDTH,	// stream widths (FINN pads to bytes)
	int unsigned  B_BITS = PE*B_WIDTH,
	int unsigned  O_BITS = PE*O_WIDTH
)(
	input	logic  clk,
	input	logic  rst,

	input	logic [A_BITS-1:0]  adat,
	input	logic  avld,
	output	logic  ardy,

	input	logic [B_BITS-1:0]  bdat,
	input	logic  bvld,
	output	logic  brdy,

	output	logic [O_BITS-1:0]  odat,
	output	logic  ovld,
	input	logic  ordy
);

	initial begin
		if(OP != "ADD" && OP != "SUB" && OP != "MUL") begin
			$error("%m: unsupported OP %s", OP);
			$finish;
		end
	end

	//--- right-hand side: the stream, or the constant table -------------
	uwire [PE*B_WIDTH-1:0]  b;
	uwire  b_ok;
	uwire  srdy;
	uwire  take;
	if(B_CONST) begin : genConst
		localparam int unsigned  IDX_W = B_WORDS > 1? $clog2(B_WORDS) : 1;
		logic [IDX_W-1:0]  Idx = '0;
		always_ff @(posedge clk) begin
			if(rst)  Idx <= '0;
			else if(take)  Idx <= (Idx == IDX_W'(B_WORDS-1))? '0 : Idx + 1;
		end
		assign	b = B_INIT[Idx*PE*B_WIDTH +: PE*B_WIDTH];
		assign	b_ok = 1;
		assign	brdy = 0;
	end : genConst
	else begin : genStream
		assign	b = bdat[PE*B_WIDTH-1:0];
		assign	b_ok = bvld;
		assign	brdy = avld && srdy;
	end : genStream

	assign	take = avld && b_ok && srdy;
	assign	ardy = b_ok && srdy;

	//--- the lanes -------------------------------------------------------
	uwire [PE*O_WIDTH-1:0]  r;
	for(genvar  i = 0; i < PE; i++) begin : genLane
		uwire [A_WIDTH-1:0]  ai = adat[i*A_WIDTH +: A_WIDTH];
		uwire [B_WIDTH-1:0]  bi = b[i*B_WIDTH +: B_WIDTH];
		uwire signed [O_WIDTH:0]  ax = A_SIGNED? $signed({ai[A_WIDTH-1], ai}) : $signed({1'b0, ai});
		uwire signed [O_WIDTH:0]  bx = B_SIGNED? $signed({bi[B_WIDTH-1], bi}) : $signed({1'b0, bi});
		uwire signed [O_WIDTH:0]  ri;
		if(OP == "ADD")       assign  ri = ax + bx;
		else if(OP == "SUB")  assign  ri = ax - bx;
		else                  assign  ri = ax * bx;
		assign	r[i*O_WIDTH +: O_WIDTH] = ri[O_WIDTH-1:0];
	end : genLane

	uwire [PE*O_WIDTH-1:0]  o;
	fpgaslim_skid #(.DATA_WIDTH(PE*O_WIDTH)) obuf (
		.clk, .rst,
		.idat(r), .ivld(take), .irdy(srdy),
		.odat(o), .ovld, .ordy
	);
	assign	odat = O_BITS'(o);

endmodule : fpgaslim_eltwise_int
